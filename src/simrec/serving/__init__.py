"""simrec serve: the similar-items endpoint (FastAPI under uvicorn, serve image).

schemas   request and response bodies (the OpenAPI description is generated from them)
inputs    turning request values (base64 PNG, pixel lists, v2 tensors) into pixel arrays
state     the served versions: swap_in (a deploy: load beside the old one, smoke check, atomic switch),
          swap_back (a rollback), live catalogue additions
guard     ASGI middleware: bearer token, body size limit, content type
app       the routes: friendly JSON, Open Inference Protocol v2, admin, web page
cli       `simrec serve`
admin_client  what deploy and refresh ask a running server for (its admin routes)
"""
