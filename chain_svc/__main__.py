from chain_svc.server import add_servicers
from mesh.server import run
from mesh.services import CHAIN

if __name__ == "__main__":
    run(CHAIN, add_servicers)
