from perfedavg.cli.main import main

main()
