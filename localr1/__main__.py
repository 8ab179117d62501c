from localr1.cli.main import main

main()
