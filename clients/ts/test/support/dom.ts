/**
 * A DOM (happy-dom) for the hook tests; import before React. Node's own
 * `fetch` is kept (happy-dom's applies browser CORS rules, which these tests
 * must not depend on) and exported as `nodeFetch`.
 */

import { GlobalRegistrator } from "@happy-dom/global-registrator";

export const nodeFetch: typeof fetch = globalThis.fetch;

GlobalRegistrator.register();
(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

/** Closes the DOM (and its timers); call in the test file's `after`. */
export async function closeDom(): Promise<void> {
  await GlobalRegistrator.unregister();
}
