from nlc.cli import run

run()
