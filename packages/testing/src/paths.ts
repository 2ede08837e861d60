import { join, resolve } from "node:path";

/** The repository root (this file lives in packages/testing/dist). */
export const REPO_ROOT = resolve(__dirname, "..", "..", "..");

/** The vendored Hugging Face + PEFT reference fixtures. */
export const GOLDEN_DIR = join(REPO_ROOT, "tests", "fixtures", "golden");
