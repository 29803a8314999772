"""Developer and operator tools: `make run`'s dev server, the local stack runner, the
configuration reference generator and the container's health check. The services never
import this package; it imports them (and `cdn_common`)."""
