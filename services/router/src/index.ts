/** @loramesh/router as a library: its command-line options (the deploy manifests are checked against them). */
export { options } from "./options";
