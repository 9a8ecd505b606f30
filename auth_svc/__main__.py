from auth_svc.server import add_servicers
from mesh.server import run
from mesh.services import AUTH

if __name__ == "__main__":
    run(AUTH, add_servicers)
