from perfedavg.cli import main

main()
