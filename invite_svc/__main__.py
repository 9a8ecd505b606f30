from invite_svc.server import add_servicers
from mesh.server import run
from mesh.services import INVITE

if __name__ == "__main__":
    run(INVITE, add_servicers)
