from localr1.cli import main

main()
