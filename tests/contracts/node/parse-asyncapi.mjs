// Parse an AsyncAPI document with the official parser; print every diagnostic, exit 1 on an error.
// Usage: node parse-asyncapi.mjs <document.json>
import { readFileSync } from "node:fs";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const path = process.argv[2];
if (!path) {
  console.error("usage: node parse-asyncapi.mjs <document.json>");
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(path, "utf8"), { source: path });
const names = { 0: "error", 1: "warning", 2: "info", 3: "hint" };
for (const d of diagnostics) {
  console.log(`${names[d.severity]} ${d.code} at ${JSON.stringify(d.path)}: ${d.message}`);
}
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
if (!document || errors.length > 0) {
  console.error(`${errors.length} error(s)`);
  process.exit(1);
}
console.log(`ok: AsyncAPI ${document.version()}, ${document.channels().length} channels, ${document.operations().length} operations, ${document.messages().length} messages`);
