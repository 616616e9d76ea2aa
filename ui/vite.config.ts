import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` serves the UI on :5173 and forwards the API to a running `kura serve`
// (KURA_URL, default http://127.0.0.1:8080). `npm run build` writes ui/dist/, which
// `kura serve` serves at `/`.
const target = process.env.KURA_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  server: { proxy: { "/api": target, "/v1": target } },
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 800 },
});
