from ner_lit.cli.command import main

main(prog="python -m ner_lit")
