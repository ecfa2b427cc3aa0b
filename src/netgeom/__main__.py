from netgeom.cli import main

main()
