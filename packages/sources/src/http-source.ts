/**
 * A plain HTTP(S) directory: its URL answers with a listing of the files in it, either an HTML
 * index (the `href`s, as nginx, Apache or `python -m http.server` write them) or a JSON array of
 * file names; each file is fetched from the directory URL plus its name.
 */
import { fetchOk, responseBody } from "./http-errors";
import type { RemoteBody, RemoteFile, RemoteSource } from "./remote-source";

export class HttpDirectorySource implements RemoteSource {
  readonly description: string;

  constructor(private readonly url: string) {
    this.description = url;
  }

  async list(signal?: AbortSignal): Promise<RemoteFile[]> {
    const res = await fetchOk(this.url, this.description, {}, signal);
    const text = await res.text();
    const names = (res.headers.get("content-type") ?? "").includes("json") ? jsonNames(text) : hrefNames(text);
    return [...new Set(names)].map((name) => ({ name }));
  }

  async open(file: RemoteFile, signal?: AbortSignal): Promise<RemoteBody> {
    const url = new URL(encodeURIComponent(file.name), this.url).toString();
    return responseBody(await fetchOk(url, `${this.url}${file.name}`, {}, signal));
  }
}

function jsonNames(text: string): string[] {
  try {
    const parsed = JSON.parse(text) as unknown;
    const list = Array.isArray(parsed) ? parsed : (parsed as { files?: unknown }).files;
    return Array.isArray(list) ? list.filter((x): x is string => typeof x === "string") : [];
  } catch {
    return [];
  }
}

/** The relative links of an HTML index, decoded ("./a%20b" → "a b"); absolute and query links are skipped. */
function hrefNames(html: string): string[] {
  const out: string[] = [];
  for (const m of html.matchAll(/href\s*=\s*["']([^"'#?]+)["']/gi)) {
    const href = m[1] ?? "";
    if (/^[a-z][a-z0-9+.-]*:/i.test(href) || href.startsWith("/")) continue;
    try {
      out.push(decodeURIComponent(href.replace(/^\.\//, "")));
    } catch {
      // not a file name
    }
  }
  return out;
}
