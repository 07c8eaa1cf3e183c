/**
 * The WebSocket the client uses: the platform's (browsers, Node ≥ 22, Deno,
 * Bun) or, on Node < 22, the `ws` package, loaded only when needed.
 *
 * @module
 */

/** The part of the WHATWG WebSocket the client uses; `ws` and browsers both fit. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

/**
 * A WHATWG-compatible WebSocket class: the platform's `WebSocket`, or the
 * `ws` package's. Its instances are used through {@link WebSocketLike}.
 */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => object;

/** `readyState` of an open socket. */
export const WS_OPEN = 1;

let cached: Promise<WebSocketConstructor> | undefined;

/** The platform's WebSocket, else `ws`'s; fails with a message saying what to install. */
export function defaultWebSocket(): Promise<WebSocketConstructor> {
  const platform = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (platform !== undefined) return Promise.resolve(platform);
  cached ??= (async () => {
    // A computed specifier keeps browser bundlers from pulling `ws` in.
    const name = "ws";
    try {
      const module = (await import(/* @vite-ignore */ name)) as { WebSocket?: WebSocketConstructor; default?: WebSocketConstructor };
      const found = module.WebSocket ?? module.default;
      if (found === undefined) throw new Error("the ws module has no WebSocket export");
      return found;
    } catch (e) {
      cached = undefined;
      throw new Error(`this runtime has no WebSocket: install the \`ws\` package (npm i ws) or pass \`WebSocket\` in the client options (${String(e)})`);
    }
  })();
  return cached;
}
