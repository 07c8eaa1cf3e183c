/**
 * Starts the real `protosync` binary (built by the same run: `PROTOSYNC_BIN`,
 * default `target/debug/protosync`) on 127.0.0.1 with a free port and a temp
 * data dir, and stops it. Waits on the process's own output, never on sleeps.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root (build-test/support → clients/ts → repo), unless PROTOSYNC_REPO says. */
export const REPO = process.env.PROTOSYNC_REPO ?? resolve(here, "../../../..");
export const BINARY = process.env.PROTOSYNC_BIN ?? join(REPO, "target/debug/protosync");
export const EXAMPLE_SCHEMA = join(REPO, "examples/schema");

/** How long the server may take to print its address, in ms. */
const START_TIMEOUT_MS = 20_000;

export const HS256_SECRET = "a-test-secret-of-at-least-32-bytes-for-hs256!!";
export const ISSUER = "https://issuer.test";
export const AUDIENCE = "protosync";
export const SERVICE_KEY = "psk_ts_sdk_tests_service_key";

export interface ServerConfig {
  /** `serve` with an HS256 provider and a service API key, instead of `dev` (which trusts everyone). */
  readonly auth?: boolean;
  /** With `auth`: this schema directory instead of the example. */
  readonly schema?: string;
  /** With `auth`: `[backends.NAME]` sections, the backends actions are forwarded to. */
  readonly backends?: Readonly<Record<string, { readonly url: string; readonly secret: string }>>;
}

export class TestServer {
  readonly dataDir: string;
  readonly #config: ServerConfig;
  #child: ChildProcess | null = null;
  #port = 0;
  #log = "";

  private constructor(config: ServerConfig) {
    this.#config = config;
    this.dataDir = mkdtempSync(join(tmpdir(), "protosync-ts-"));
  }

  static async start(config: ServerConfig = {}): Promise<TestServer> {
    const server = new TestServer(config);
    await server.#spawn();
    return server;
  }

  get port(): number {
    return this.#port;
  }

  /** `http://127.0.0.1:PORT` */
  get url(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  /** What the process wrote to stderr (for failure messages). */
  get log(): string {
    return this.#log;
  }

  async #spawn(): Promise<void> {
    const listen = `127.0.0.1:${this.#port}`;
    let args: string[];
    if (this.#config.auth) {
      const configPath = join(this.dataDir, "protosync.toml");
      const keyHash = createHash("sha256").update(SERVICE_KEY).digest("hex");
      writeFileSync(
        configPath,
        [
          `schema = ${JSON.stringify(this.#config.schema ?? EXAMPLE_SCHEMA)}`,
          `database = ${JSON.stringify(`sqlite:${join(this.dataDir, "serve.db")}`)}`,
          `listen = ${JSON.stringify(listen)}`,
          "[auth]",
          "leeway_seconds = 0",
          "[[auth.providers]]",
          'name = "test"',
          `issuer = ${JSON.stringify(ISSUER)}`,
          `audience = [${JSON.stringify(AUDIENCE)}]`,
          'algorithms = ["HS256"]',
          `secret = ${JSON.stringify(HS256_SECRET)}`,
          "[[auth.api_keys]]",
          'name = "tests"',
          `sha256 = ${JSON.stringify(keyHash)}`,
          ...Object.entries(this.#config.backends ?? {}).flatMap(([name, b]) => [
            `[backends.${name}]`,
            `url = ${JSON.stringify(b.url)}`,
            `secret = ${JSON.stringify(b.secret)}`,
          ]),
          "",
        ].join("\n"),
      );
      args = ["serve", "--config", configPath];
    } else {
      args = ["dev", "--data-dir", this.dataDir, "--listen", listen];
    }
    const child = spawn(BINARY, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, PROTOSYNC_LOG: "warn" } });
    this.#child = child;
    child.stderr?.on("data", (chunk: Buffer) => {
      this.#log += chunk.toString();
    });
    await new Promise<void>((resolvePromise, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`protosync did not start within ${START_TIMEOUT_MS} ms:\n${out}\n${this.#log}`)), START_TIMEOUT_MS);
      child.once("error", (e) => {
        clearTimeout(timer);
        reject(new Error(`cannot run ${BINARY} (build it with cargo build -p protosync, or set PROTOSYNC_BIN): ${String(e)}`));
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`protosync exited with ${code} before listening:\n${out}\n${this.#log}`));
      });
      child.stdout?.on("data", (chunk: Buffer) => {
        out += chunk.toString();
        const match = /listening: http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
        if (match !== null) {
          clearTimeout(timer);
          child.removeAllListeners("exit");
          this.#port = Number(match[1]);
          resolvePromise();
        }
      });
    });
  }

  /** Kills the process at once (SIGKILL: no close frames, as a crash). */
  async kill(): Promise<void> {
    const child = this.#child;
    if (child === null) return;
    this.#child = null;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGKILL");
    await exited;
  }

  /** Starts the server again on the same port and data. */
  async restart(): Promise<void> {
    await this.kill();
    await this.#spawn();
  }

  /** Stops the server and removes its data. */
  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** An HS256 JWT for `sub`, valid for `ttlSeconds` (may be negative: already expired). */
export function mintToken(sub: string, ttlSeconds: number, extra: Record<string, unknown> = {}): string {
  const now = Math.floor(Date.now() / 1000);
  const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString("base64url");
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ iss: ISSUER, aud: AUDIENCE, sub, iat: now, exp: now + ttlSeconds, ...extra });
  const signature = createHmac("sha256", HS256_SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${signature}`;
}

/** POST to the HTTP API as a trusted caller (or with `token`). */
export async function http(server: TestServer, path: string, body: unknown, token?: string): Promise<{ status: number; body: unknown }> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`${server.url}${path}`, { method: "POST", headers, body: JSON.stringify(body) });
  return { status: response.status, body: await response.json() };
}
