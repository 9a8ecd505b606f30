from web_svc.server import main

main()
