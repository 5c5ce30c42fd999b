from envflow.cli.main import main

main()
