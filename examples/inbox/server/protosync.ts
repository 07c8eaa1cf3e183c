/**
 * Runs the protosync binary (`protosync serve` on SQLite) for the app: the
 * inbox schema, Better Auth as its token provider (the JWKS URL), the
 * backend's API key, and the web app's origin. Waits on the process's own
 * "listening" line, never on a sleep; can be killed and restarted on the
 * same port and data (the browser test does, mid-run).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The example's folder (build/server → examples/inbox). */
export const EXAMPLE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const REPO = resolve(EXAMPLE_DIR, "../..");
/** The binary cargo built, as scripts/test finds it; PROTOSYNC_BIN overrides. */
export const BINARY = process.env.PROTOSYNC_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(REPO, "target"), "debug/protosync");
/** How long the server may take to print its address, in ms. */
const START_TIMEOUT_MS = 30_000;

export interface ProtosyncOptions {
  /** 0: a free port (kept across restarts). */
  readonly port: number;
  readonly dataDir: string;
  /** Better Auth's base URL: the tokens' issuer and audience. */
  readonly authUrl: string;
  readonly jwksUrl: string;
  /** The key the backend writes with; only its SHA-256 goes in the config. */
  readonly backendApiKey: string;
  /** Where the backend serves the actions, and the secret calls to it are signed with. */
  readonly backendUrl: string;
  readonly backendSecret: string;
}

export class ProtosyncProcess {
  readonly #options: ProtosyncOptions;
  readonly #configPath: string;
  #child: ChildProcess | null = null;
  #port: number;
  #log = "";

  constructor(options: ProtosyncOptions) {
    this.#options = options;
    this.#port = options.port;
    this.#configPath = join(options.dataDir, "protosync.toml");
  }

  get url(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  /** What the process wrote to stderr, for failure messages. */
  get log(): string {
    return this.#log;
  }

  /** The config file the process runs with (docs/auth.md shows the same). */
  config(): string {
    const o = this.#options;
    return [
      `schema = ${JSON.stringify(join(EXAMPLE_DIR, "schema"))}`,
      `database = ${JSON.stringify(`sqlite:${join(o.dataDir, "protosync.db")}`)}`,
      `listen = "127.0.0.1:${this.#port}"`,
      "",
      "[auth]",
      'allowed_origins = ["http://127.0.0.1:*", "http://localhost:*"]',
      "",
      "[[auth.providers]]",
      'name = "better-auth"',
      `issuer = ${JSON.stringify(o.authUrl)}`,
      `audience = [${JSON.stringify(o.authUrl)}]`,
      'algorithms = ["EdDSA"]',
      `jwks_url = ${JSON.stringify(o.jwksUrl)}`,
      'required_claims = ["sub"]',
      "",
      "[[auth.api_keys]]",
      'name = "backend"',
      `sha256 = "${createHash("sha256").update(o.backendApiKey).digest("hex")}"`,
      "",
      "[backends.inbox]",
      `url = ${JSON.stringify(o.backendUrl)}`,
      `secret = ${JSON.stringify(o.backendSecret)}`,
      "",
    ].join("\n");
  }

  async start(): Promise<void> {
    writeFileSync(this.#configPath, this.config());
    const child = spawn(BINARY, ["serve", "--config", this.#configPath], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, PROTOSYNC_LOG: process.env.PROTOSYNC_LOG ?? "warn" },
    });
    this.#child = child;
    child.stderr?.on("data", (chunk: Buffer) => {
      this.#log += chunk.toString();
      process.stderr.write(`[protosync] ${chunk.toString()}`);
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
    this.#child = null;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGKILL");
    await exited;
  }

  /** Starts it again on the same port and data. */
  async restart(): Promise<void> {
    await this.kill();
    await this.start();
  }
}
