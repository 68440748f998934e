from v2serve.cli import main

main()
