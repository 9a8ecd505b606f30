"""web_svc: the pages people reserve a spot on, share their codes from, and admins run the mesh
from. Server-rendered (Starlette + Jinja2), working without JavaScript; a client of the mesh's
public and user methods through the edge, never of an internal one."""
