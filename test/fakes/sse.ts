/**
 * A minimal Server-Sent Events parser for tests: splits a body into messages with their
 * id, event and data fields (comments and the retry field are dropped).
 *
 * @example
 * const messages = parseSse(await res.text());
 */
export interface SseMessage {
  id?: string;
  event?: string;
  data: string;
}

export function parseSse(text: string): SseMessage[] {
  const out: SseMessage[] = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    const msg: SseMessage = { data: '' };
    const data: string[] = [];
    let any = false;
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (field === 'data') data.push(value);
      else if (field === 'id') msg.id = value;
      else if (field === 'event') msg.event = value;
      else continue;
      any = true;
    }
    if (!any) continue;
    msg.data = data.join('\n');
    out.push(msg);
  }
  return out;
}

/** Reads an SSE stream incrementally, calling `onMessage` per message; resolves at its end. */
export async function readSse(body: ReadableStream<Uint8Array>, onMessage: (m: SseMessage) => boolean | void): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut: number;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, '');
      for (const m of parseSse(block)) {
        if (onMessage(m) === false) {
          await reader.cancel();
          return;
        }
      }
    }
  }
}
