// Line icons drawn as inline SVG, so they look the same on every machine
// (an offline workstation may have no emoji font).

const PATHS: Record<string, string> = {
  chat: "M4 5h16v11H9l-5 4z",
  folder: "M3 6h6l2 2h10v11H3z",
  model: "M7 7h10v10H7z M10 3v4 M14 3v4 M10 17v4 M14 17v4 M3 10h4 M3 14h4 M17 10h4 M17 14h4",
  training: "M4 6h10 M18 6h2 M4 12h4 M12 12h8 M4 18h12 M20 18h0 M16 4v4 M10 10v4 M18 16v4",
  lock: "M6 11h12v9H6z M9 11V8a3 3 0 0 1 6 0v3",
  copy: "M9 9h11v11H9z M5 15H4V4h11v1",
  up: "M7 11v9H4v-9z M7 11l4-8c1.7 0 3 1.3 3 3v3h5.5l-1.8 11H7",
  down: "M7 13V4H4v9z M7 13l4 8c1.7 0 3-1.3 3-3v-3h5.5L17.7 4H7",
  warn: "M12 3l10 18H2z M12 10v5 M12 18v.5",
  info: "M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18z M12 11v6 M12 7.5v.5",
  plus: "M12 5v14 M5 12h14",
  refresh: "M20 11a8 8 0 1 0-2.3 5.7 M20 4v7h-7",
  trash: "M4 7h16 M9 7V4h6v3 M6 7l1 13h10l1-13",
  close: "M6 6l12 12 M18 6L6 18",
  check: "M5 12l5 5 9-10",
};

export function Icon({ name, size = 16 }: { name: keyof typeof PATHS; size?: number }) {
  return (
    <svg
      className="icon"
      width={size}
      height={size}
      viewBox="0 0 24 24"
      fill="none"
      stroke="currentColor"
      strokeWidth={1.8}
      strokeLinecap="round"
      strokeLinejoin="round"
      aria-hidden
    >
      <path d={PATHS[name]} />
    </svg>
  );
}
