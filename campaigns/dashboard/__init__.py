"""The admin dashboard: figures gathered in bounded queries, drawn as server-side SVG."""
