from distgraph.cli import main

main()
