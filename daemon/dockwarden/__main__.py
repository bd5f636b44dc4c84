from dockwarden.cli import main

raise SystemExit(main())
