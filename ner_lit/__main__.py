from ner_lit.command import main

main(prog="python -m ner_lit")
