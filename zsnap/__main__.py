from zsnap.cli import main

main()
