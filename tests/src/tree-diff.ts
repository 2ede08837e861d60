import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";

/** Every file under `dir`, as paths relative to it, sorted. */
export function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const full = join(d, name);
      if (statSync(full).isDirectory()) walk(full);
      else out.push(relative(dir, full));
    }
  };
  walk(dir);
  return out.sort();
}

/** Relative paths that differ between two trees: missing on one side or with other bytes. */
export function diffTrees(expectedDir: string, actualDir: string): string[] {
  const expected = listFiles(expectedDir);
  const actual = listFiles(actualDir);
  const differing = new Set<string>();
  for (const path of new Set([...expected, ...actual])) {
    if (!expected.includes(path) || !actual.includes(path)) differing.add(path);
    else if (!readFileSync(join(expectedDir, path)).equals(readFileSync(join(actualDir, path)))) differing.add(path);
  }
  return [...differing].sort();
}
