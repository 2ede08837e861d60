// Type-aware linting for every TypeScript package; generated protocol code is excluded.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

// The dependency rule (docs/architecture.md, "Packages"): what each folder may not import. ESLint
// keeps only the last `no-restricted-imports` entry that matches a file, so every entry repeats the
// rule that holds everywhere (no reaching into another package's src/ or dist/).
const everywhere = [
  {
    regex: "^@loramesh/[^/]+/(src|dist)(/|$)",
    message: "import the package by its name (@loramesh/x), never its src/ or dist/ paths",
  },
  {
    regex: "^(\\.\\./)+(packages|services|native)(/|$)|^(\\.\\./){2,}[^/]+/(src|dist|ts)(/|$)",
    message: "import another package by its name (@loramesh/x), never by a relative path into it",
  },
];
const noNative = {
  group: ["@loramesh/native", "@loramesh/native/**", "@loramesh/engine", "@loramesh/engine/**"],
  message:
    "this process must not load loramesh_native.node: use @loramesh/formats (config, adapters, tokenizer) and @loramesh/errors",
};
const noGrpc = { group: ["@grpc/*", "grpc-health-check"], message: "errors and formats carry no gRPC dependency" };
const restrict = (files, ...patterns) => ({
  files,
  rules: { "no-restricted-imports": ["error", { patterns: [...everywhere, ...patterns] }] },
});

export default tseslint.config(
  {
    ignores: [
      "**/dist/**",
      "**/node_modules/**",
      "packages/proto/src/gen/**",
      "native/build*/**",
      "**/*.mjs",
      "**/*.js",
      // analysis scripts kept beside the benchmark results they produced
      "bench/results/**",
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/require-await": "off",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
    },
  },
  restrict(["**/*.ts"]),
  restrict(["packages/errors/**/*.ts"], noGrpc, {
    group: ["@loramesh/*"],
    message: "@loramesh/errors is the bottom layer: it imports no other loramesh package",
  }),
  restrict(["packages/formats/**/*.ts"], noGrpc, noNative, {
    group: ["@loramesh/*", "!@loramesh/errors", "!@loramesh/testing"],
    message: "@loramesh/formats is pure TypeScript over @loramesh/errors only",
  }),
  restrict(["packages/sources/**/*.ts"], noGrpc, noNative, {
    group: ["@loramesh/*", "!@loramesh/errors", "!@loramesh/formats", "!@loramesh/testing"],
    message: "@loramesh/sources is pure TypeScript over @loramesh/errors and @loramesh/formats",
  }),
  restrict(
    [
      "packages/core/**/*.ts",
      "packages/mesh/**/*.ts",
      "packages/sdk/**/*.ts",
      "packages/policy/**/*.ts",
      "services/router/**/*.ts",
      "services/provisioner/**/*.ts",
    ],
    noNative,
  ),
);
