"""The HTTP routes, one router per concern: the web page and its similar-items JSON API (similar.py), the
Open Inference Protocol v2 (oip.py), the admin plane (admin.py) and Prometheus' scrape (observability.py).
Routes reach the server's objects (serving state, batcher, metrics) through context.py's dependencies,
which read them from `app.state`; create_app (app.py) puts them there and includes the routers."""
