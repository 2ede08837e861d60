/**
 * A real HTTP server on 127.0.0.1 for adapter-source tests, with two layouts:
 * - the Hugging Face Hub's: `GET /api/models/{org}/{name}/revision/{rev}` (JSON with `siblings`)
 *   and `GET /{org}/{name}/resolve/{rev}/{path}`, optionally requiring `Authorization: Bearer`
 *   for every repository or (a gated one) for that repository with its own token;
 * - a plain directory: `GET /files/{dir}/` answers an HTML index, `GET /files/{dir}/{name}` the file.
 * Faults for the bad-input tests: a file can be cut short (announced length, half the bytes, then
 * the socket is destroyed). Every request path is counted, so a test can prove a source was not read.
 * Benchmarks can put it behind a simulated WAN link (`link`: latency per request, shared bandwidth).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { SimulatedLink, type LinkOptions } from "./simulated-link";

export interface AdapterFileServer {
  url: string;
  /** Repositories by "org/name", then revision, then path → bytes. */
  hub: Map<string, Map<string, Map<string, Buffer>>>;
  /** Plain directories by name, then file name → bytes. */
  dirs: Map<string, Map<string, Buffer>>;
  /** Gated repositories, "org/name" → the one token granted access (401 without, 403 for another). */
  gated: Map<string, string>;
  /** Paths (`org/name/rev/path` or `dir/name`) sent truncated. */
  truncate: Set<string>;
  /** File requests served, by URL path. */
  hits: Map<string, number>;
  close(): Promise<void>;
}

export interface AdapterFileServerOptions {
  /** When set, hub requests need `Authorization: Bearer <token>` (401 without, 403 for another). */
  token?: string;
  /** A simulated WAN link between this server and its clients (default: loopback as it is). */
  link?: LinkOptions;
}

function send(res: ServerResponse, status: number, body: string | Buffer, type = "text/plain"): void {
  res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body) });
  res.end(body);
}

function sendFile(res: ServerResponse, bytes: Buffer, truncated: boolean, link: SimulatedLink): void {
  res.writeHead(200, { "content-type": "application/octet-stream", "content-length": bytes.length });
  if (link.limited) {
    const half = Math.floor(bytes.length / 2);
    void link.write(res, bytes, truncated ? half : bytes.length).then(() => (truncated ? res.destroy() : res.end()));
    return;
  }
  if (!truncated) {
    res.end(bytes);
    return;
  }
  res.write(bytes.subarray(0, Math.floor(bytes.length / 2)), () => res.destroy());
}

export async function startAdapterFileServer(options: AdapterFileServerOptions = {}): Promise<AdapterFileServer> {
  const state = {
    hub: new Map<string, Map<string, Map<string, Buffer>>>(),
    dirs: new Map<string, Map<string, Buffer>>(),
    gated: new Map<string, string>(),
    truncate: new Set<string>(),
    hits: new Map<string, number>(),
  };
  const authorized = (req: IncomingMessage, res: ServerResponse, repo: string): boolean => {
    const token = state.gated.get(repo) ?? options.token;
    if (token === undefined) return true;
    const auth = req.headers.authorization;
    if (auth === `Bearer ${token}`) return true;
    send(res, auth ? 403 : 401, "unauthorized");
    return false;
  };
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    state.hits.set(path, (state.hits.get(path) ?? 0) + 1);
    let m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(path);
    if (m) {
      if (!authorized(req, res, m[1] ?? "")) return;
      const files = state.hub.get(m[1] ?? "")?.get(m[2] ?? "");
      if (!files) return send(res, 404, JSON.stringify({ error: "Repository not found" }), "application/json");
      const siblings = [...files.keys()].map((rfilename) => ({ rfilename }));
      return send(res, 200, JSON.stringify({ id: m[1], sha: m[2], siblings }), "application/json");
    }
    m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (m) {
      if (!authorized(req, res, m[1] ?? "")) return;
      const bytes = state.hub
        .get(m[1] ?? "")
        ?.get(m[2] ?? "")
        ?.get(m[3] ?? "");
      if (!bytes) return send(res, 404, "Entry not found");
      return sendFile(res, bytes, state.truncate.has(`${m[1]}/${m[2]}/${m[3]}`), link);
    }
    m = /^\/files\/([^/]+)\/(.*)$/.exec(path);
    const dir = m ? state.dirs.get(m[1] ?? "") : undefined;
    if (!m || !dir) return send(res, 404, "not found");
    const name = m[2] ?? "";
    if (name === "") {
      const links = [...dir.keys()].map((n) => `<a href="${encodeURIComponent(n)}">${n}</a>`).join("\n");
      return send(res, 200, `<html><body><a href="../">../</a>\n${links}</body></html>`, "text/html");
    }
    const bytes = dir.get(name);
    if (!bytes) return send(res, 404, "not found");
    sendFile(res, bytes, state.truncate.has(`${m[1]}/${name}`), link);
  };
  const link = new SimulatedLink(options.link);
  const server: Server = createServer((req, res) => {
    if (!link.limited) return handle(req, res);
    void link.delay().then(() => handle(req, res));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    ...state,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
