from latent_search_cli.app import main

main()
