/**
 * `npm run dev`: the whole app on fixed local ports, with the demo user and
 * mailbox, until Ctrl-C. The data starts fresh each run (the fake Gmail
 * keeps its mailbox in memory, so the rest must too).
 */
import { rmSync } from "node:fs";
import { join } from "node:path";

import { DEMO_MESSAGES } from "./demo-messages.js";
import { EXAMPLE_DIR } from "./protosync.js";
import { DEMO_USER, startStack } from "./stack.js";

const dataDir = join(EXAMPLE_DIR, ".data");
rmSync(dataDir, { recursive: true, force: true });
const stack = await startStack({
  dataDir,
  ports: { web: 5173, protosync: 4000, auth: 4100, gmail: 4300, backend: 4200 },
  seedMessages: DEMO_MESSAGES,
  log: (line) => console.log(`[backend] ${line}`),
});
console.log(`
inbox is running:
  web app:     ${stack.webUrl}   (sign in as ${DEMO_USER.email} / ${DEMO_USER.password})
  protosync:   ${stack.protosync.url}
  Better Auth: ${stack.auth.url}  (JWKS: ${stack.auth.jwksUrl})
  backend:     ${stack.backend.url}  (the actions protosync forwards)
  fake Gmail:  ${stack.gmail.url}  (new mail: curl -X POST ${stack.gmail.url}/gmail/v1/deliver -H 'content-type: application/json' \\
                 -d '{"to": "${DEMO_USER.email}", "from": {"name": "Ann", "email": "ann@example.test"}, "subject": "Urgent: hello", "body": "Hi!"}')
Ctrl-C stops everything.
`);

let stopping = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    console.log("\nstopping…");
    stack.stop().then(() => process.exit(0), (e: unknown) => {
      console.error(e);
      process.exit(1);
    });
  });
}
