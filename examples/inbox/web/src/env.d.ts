/** protosync's URL, set by the stack when it starts Vite (server/stack.ts). */
declare const __PROTOSYNC_URL__: string;
