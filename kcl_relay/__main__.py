from kcl_relay.cli import main

main()
