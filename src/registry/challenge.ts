/**
 * WWW-Authenticate parsing (RFC 7235): `Bearer realm="...",service="...",scope="..."` or
 * `Basic realm="..."`. Registries send one challenge; the parser still copes with several.
 */
export interface Challenge {
  scheme: string; // lowercased: 'bearer', 'basic', ...
  params: Record<string, string>; // keys lowercased
}

export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  const text = Array.isArray(header) ? header.join(', ') : header ?? '';
  const challenges: Challenge[] = [];
  let i = 0;
  const skipSpace = (): void => {
    while (i < text.length && /[\s,]/.test(text[i]!)) i++;
  };
  const token = (): string => {
    const start = i;
    while (i < text.length && /[!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(text[i]!)) i++;
    return text.slice(start, i);
  };
  while (i < text.length) {
    skipSpace();
    const scheme = token();
    if (!scheme) break;
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    challenges.push(challenge);
    // auth-params: key=value or key="quoted", separated by commas, until the next scheme.
    for (;;) {
      while (i < text.length && /[\s]/.test(text[i]!)) i++;
      const save = i;
      const key = token();
      while (i < text.length && /\s/.test(text[i]!)) i++;
      if (!key || text[i] !== '=') {
        i = save;
        break;
      }
      i++; // '='
      while (i < text.length && /\s/.test(text[i]!)) i++;
      let value = '';
      if (text[i] === '"') {
        i++;
        while (i < text.length && text[i] !== '"') {
          if (text[i] === '\\' && i + 1 < text.length) i++;
          value += text[i++];
        }
        i++; // closing quote
      } else {
        value = token();
      }
      challenge.params[key.toLowerCase()] = value;
      while (i < text.length && /\s/.test(text[i]!)) i++;
      if (text[i] === ',') {
        i++;
        continue;
      }
      break;
    }
  }
  return challenges;
}
