/**
 * The adapter source strings users write (`adapters add NAME SOURCE`, the registration RPC, the
 * HTTP admin route), parsed into one typed value per kind of source.
 */
import { InvalidArgumentError } from "@loramesh/errors";

export type AdapterSourceSpec =
  | { kind: "local"; path: string }
  | { kind: "hf"; org: string; name: string; revision: string; subdir: string }
  | { kind: "s3"; bucket: string; prefix: string }
  | { kind: "http"; url: string };

const SCHEME = /^([a-z][a-z0-9+.-]*):\/\//i;
const HUB_PART = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** True when the string names a remote source (has a URI scheme) rather than a local path. */
export function isRemoteSource(source: string): boolean {
  return SCHEME.test(source);
}

/** Parses a source string; a malformed or unsupported one is InvalidArgumentError. */
export function parseAdapterSource(source: string): AdapterSourceSpec {
  const scheme = SCHEME.exec(source)?.[1]?.toLowerCase();
  if (scheme === undefined) {
    if (source === "") throw new InvalidArgumentError("an adapter source is required");
    return { kind: "local", path: source };
  }
  const rest = source.slice(scheme.length + 3);
  switch (scheme) {
    case "hf":
      return parseHub(source, rest);
    case "s3":
      return parseS3(source, rest);
    case "http":
    case "https":
      return parseHttp(source);
    default:
      throw new InvalidArgumentError(
        `unsupported adapter source scheme ${JSON.stringify(scheme)}; use a local path, hf://, s3://, https:// or http://`,
      );
  }
}

/** hf://ORG/NAME[@REVISION][/SUBDIR] */
function parseHub(source: string, rest: string): AdapterSourceSpec {
  const [org, nameRev, ...sub] = rest.split("/");
  const at = nameRev?.indexOf("@") ?? -1;
  const name = at >= 0 ? nameRev?.slice(0, at) : nameRev;
  const revision = at >= 0 ? (nameRev?.slice(at + 1) ?? "") : "main";
  const subdir = sub.filter((s) => s !== "").join("/");
  if (!org || !name || !HUB_PART.test(org) || !HUB_PART.test(name) || revision === "" || /[/\s]/.test(revision))
    throw new InvalidArgumentError(
      `malformed hub source ${JSON.stringify(source)}; use hf://ORG/NAME[@REVISION][/SUBDIR]`,
    );
  checkRelative(source, subdir);
  return { kind: "hf", org, name, revision, subdir };
}

/** s3://BUCKET/PREFIX */
function parseS3(source: string, rest: string): AdapterSourceSpec {
  const slash = rest.indexOf("/");
  const bucket = slash >= 0 ? rest.slice(0, slash) : rest;
  const prefix = slash >= 0 ? rest.slice(slash + 1).replace(/\/+$/, "") : "";
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket))
    throw new InvalidArgumentError(`malformed S3 source ${JSON.stringify(source)}; use s3://BUCKET/PREFIX`);
  checkRelative(source, prefix);
  return { kind: "s3", bucket, prefix };
}

function parseHttp(source: string): AdapterSourceSpec {
  let url: URL;
  try {
    url = new URL(source);
  } catch {
    throw new InvalidArgumentError(`malformed URL ${JSON.stringify(source)}`);
  }
  if (url.username || url.password)
    throw new InvalidArgumentError("an adapter URL must not carry credentials; they would be stored with the adapter");
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  return { kind: "http", url: url.toString() };
}

/** A sub-path inside a repository or bucket may not climb out of it. */
function checkRelative(source: string, path: string): void {
  if (path.split("/").some((p) => p === ".." || p === "."))
    throw new InvalidArgumentError(`adapter source ${JSON.stringify(source)} has a "." or ".." path segment`);
}
