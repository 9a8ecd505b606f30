from mesh.server import run
from mesh.services import RATELIMIT
from ratelimit_svc.server import add_servicers

if __name__ == "__main__":
    run(RATELIMIT, add_servicers)
