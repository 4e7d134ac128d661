from nps_sync.cli import main

main()
