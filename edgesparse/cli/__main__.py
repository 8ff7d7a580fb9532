from edgesparse.cli import main

main()
