/**
 * The Hugging Face Hub layout over HTTP: the file list from `/api/models/{org}/{name}/revision/{rev}`
 * (its `siblings`), each file from `/{org}/{name}/resolve/{rev}/{path}`. The endpoint comes from
 * HF_ENDPOINT, a token from HF_TOKEN or else the token file `huggingface-cli login` writes
 * (HF_TOKEN_PATH, default $HF_HOME/token, HF_HOME defaulting to ~/.cache/huggingface), sent as a
 * Bearer header. The file is read per fetch, so a login or logout takes effect without a restart.
 */
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { UnavailableError } from "@loramesh/errors";
import { fetchOk, responseBody } from "./http-errors";
import type { RemoteBody, RemoteFile, RemoteSource } from "./remote-source";

export const DEFAULT_HF_ENDPOINT = "https://huggingface.co";

export interface HubLocation {
  org: string;
  name: string;
  revision: string;
  subdir: string;
}

export class HubSource implements RemoteSource {
  readonly description: string;
  private readonly endpoint: string;
  private readonly headers: Record<string, string>;

  constructor(
    private readonly at: HubLocation,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    this.endpoint = (env["HF_ENDPOINT"] || DEFAULT_HF_ENDPOINT).replace(/\/+$/, "");
    const token = hubToken(env);
    this.headers = token ? { authorization: `Bearer ${token}` } : {};
    this.description = `hf://${at.org}/${at.name}@${at.revision}${at.subdir ? `/${at.subdir}` : ""}`;
  }

  async list(signal?: AbortSignal): Promise<RemoteFile[]> {
    const { org, name, revision, subdir } = this.at;
    const url = `${this.endpoint}/api/models/${org}/${name}/revision/${encodeURIComponent(revision)}`;
    const res = await fetchOk(url, this.description, this.headers, signal);
    let body: { siblings?: Array<{ rfilename?: unknown; size?: unknown }> };
    try {
      body = (await res.json()) as typeof body;
    } catch (err) {
      throw new UnavailableError(`${this.description}: the hub's file listing is not JSON`, { cause: err });
    }
    const prefix = subdir ? `${subdir}/` : "";
    const files: RemoteFile[] = [];
    for (const s of body.siblings ?? []) {
      if (typeof s.rfilename !== "string" || !s.rfilename.startsWith(prefix)) continue;
      const rel = s.rfilename.slice(prefix.length);
      files.push(typeof s.size === "number" ? { name: rel, size: s.size } : { name: rel });
    }
    return files;
  }

  async open(file: RemoteFile, signal?: AbortSignal): Promise<RemoteBody> {
    const { org, name, revision, subdir } = this.at;
    const path = [...(subdir ? subdir.split("/") : []), file.name].map(encodeURIComponent).join("/");
    const url = `${this.endpoint}/${org}/${name}/resolve/${encodeURIComponent(revision)}/${path}`;
    return responseBody(await fetchOk(url, `${this.description}/${file.name}`, this.headers, signal));
  }
}

/** The hub token as huggingface_hub finds it: HF_TOKEN, else the login token file; none if neither. */
export function hubToken(env: NodeJS.ProcessEnv): string | undefined {
  if (env["HF_TOKEN"]) return env["HF_TOKEN"];
  const file = env["HF_TOKEN_PATH"] || join(env["HF_HOME"] || join(homedir(), ".cache", "huggingface"), "token");
  try {
    return readFileSync(file, "utf8").trim() || undefined;
  } catch {
    return undefined; // not logged in: public repositories still work
  }
}
