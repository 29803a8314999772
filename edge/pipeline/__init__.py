"""The transform: probe the header, plan the geometry (pure), run libvips steps, encode."""
