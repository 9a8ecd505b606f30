from mail_svc.server import add_servicers
from mesh.server import run
from mesh.services import MAIL

if __name__ == "__main__":
    run(MAIL, add_servicers)
