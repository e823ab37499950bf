import { describe, expect, it } from 'vitest';
import { emailToText, decodeQuotedPrintable, htmlToText } from './email.js';

const RAW = [
  'From someone@example.com  Thu Aug 22 12:36:23 2002',
  'Received: from localhost',
  '\tby example.com',
  'Subject: Re: New Sequences Window',
  'Content-Type: text/plain; charset=us-ascii',
  'Content-Transfer-Encoding: quoted-printable',
  '',
  'On Wed, Chris wrote:',
  '> old quoted text that should go',
  'I tried the new sequences window and it works fine for me now, thanks for the q=',
  'uick fix. The caf=E9 is open.',
  '',
  '-- ',
  'Chris, signature',
].join('\n');

describe('email cleaning', () => {
  it('keeps subject and body, drops headers, quotes and signature', () => {
    const text = emailToText(RAW)!;
    expect(text.startsWith('Subject: Re: New Sequences Window\n\n')).toBe(true);
    expect(text).toContain('quick fix');
    expect(text).toContain('café');
    expect(text).not.toContain('Received');
    expect(text).not.toContain('old quoted');
    expect(text).not.toContain('signature');
  });

  it('decodes quoted-printable and strips HTML', () => {
    expect(decodeQuotedPrintable('a=3Db=\nc')).toBe('a=bc');
    expect(htmlToText('<html><style>x{}</style><p>Hello&nbsp;<b>world</b> &amp; you</p></html>').trim()).toBe('Hello world & you');
  });

  it('rejects bodies with nothing readable', () => {
    expect(emailToText('Subject: x\n\n=====\n')).toBeNull();
  });
});
