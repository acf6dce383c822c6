import t from 'tap';
import { controlScenarios } from '../scenarios/control';
import { STACKS } from '../stacks';

controlScenarios(t, STACKS['modular']);
