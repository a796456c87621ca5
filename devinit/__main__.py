from devinit.cli import main

main()
