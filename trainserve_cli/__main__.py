from trainserve_cli.main import main

main()
