/**
 * Durations as the page prints them: milliseconds under a second, then seconds, then minutes.
 *
 * @example
 * formatMs(1500); // '1.50 s'
 */
export function formatMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60000)}m${Math.round((ms % 60000) / 1000)}s`;
}
