from sparsekits.phantoms.generate import main

main()
