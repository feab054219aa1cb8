// The Generate and Compare pages' own stylesheet (pages/playground.css), linked once on first use.
const HREF = "/static/pages/playground.css";

export function useStyles() {
  if (document.querySelector(`link[href="${HREF}"]`)) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = HREF;
  document.head.append(link);
}
