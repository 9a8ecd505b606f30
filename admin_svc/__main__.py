from admin_svc.server import add_servicers
from mesh.server import run
from mesh.services import ADMIN

if __name__ == "__main__":
    run(ADMIN, add_servicers)
