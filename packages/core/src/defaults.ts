/**
 * Defaults shared by more than one process or command, declared once: the services' option specs,
 * `loramesh up` and the client commands all read them from here.
 */

/** Where the router serves the public API, and where clients look for it. */
export const DEFAULT_ROUTER_ADDRESS = "127.0.0.1:50051";

/** Internal services listen on loopback with a free port and report the real one. */
export const DEFAULT_LISTEN_ADDRESS = "127.0.0.1:0";

/**
 * Tokens a sequence may generate when the request sets no max_tokens: the engine applies it, and
 * the router needs it to know what is left of a request it resubmits to another worker.
 */
export const DEFAULT_MAX_TOKENS = 128;
