from ner_lit.cli import main

main()
